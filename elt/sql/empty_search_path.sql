-- The scratch database's session, before elt/sql/staging_catalog.sql: with an
-- empty search_path, pg_get_indexdef qualifies every name (see index_def there).
SELECT pg_catalog.set_config('search_path', '', false);
