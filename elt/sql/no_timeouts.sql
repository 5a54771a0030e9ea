-- Session settings for the job's own long-lived sessions: a server-wide
-- statement, lock, idle-in-transaction, idle-session (PostgreSQL 14+) or
-- transaction (17+) timeout
-- must not end a copy or its validation halfway. Only the settings this server
-- knows are set, so the same file works on every version.
SELECT pg_catalog.set_config(name, '0', false)
FROM pg_catalog.pg_settings
WHERE name IN ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout',
               'idle_session_timeout', 'transaction_timeout');
