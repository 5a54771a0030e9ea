-- Who a server is: two databases with the same answer are the same database,
-- whatever host names the settings used to reach them (pipeline.run refuses
-- to copy a database into itself).
SELECT pg_catalog.pg_postmaster_start_time()::text AS started,
       pg_catalog.current_database() AS database,
       pg_catalog.inet_server_port() AS port;
