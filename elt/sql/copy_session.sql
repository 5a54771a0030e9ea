-- Session settings for the parallel copy's worker sessions, on both servers
-- (the same ones pg_dump and pg_restore set): text-format values must print
-- and parse identically, and row security must never silently hide rows.
SET DateStyle = ISO;
SET IntervalStyle = postgres;
SET extra_float_digits = 3;
SET row_security = off;
