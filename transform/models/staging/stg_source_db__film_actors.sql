-- One row per film and actor, with the composite key spelt out as one column
-- so that it can be tested (and joined) as a single key.
with source as (
    -- By name, not *: a view keeps what * meant when it was created.
    select film_id, actor_id
    from {{ source('source_db', 'film_actors') }}
)

select
    (film_id::text || '-' || actor_id::text) as film_actor_id,
    film_id::integer as film_id,
    actor_id::integer as actor_id
from source
