-- Session settings for validation, applied identically on source and
-- destination: the digests hash each row's text form, and these settings are
-- everything that text form depends on (dates, intervals, time zones, float
-- digits, bytea, money, reg* types). row_security = off makes a policy that
-- hides rows an error rather than a silent undercount, as in pg_dump.
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET TimeZone = 'UTC';
SET extra_float_digits = 3;
SET bytea_output = 'hex';
SET lc_monetary = 'C';
SET search_path = pg_catalog;
SET row_security = off;
SET statement_timeout = 0;
