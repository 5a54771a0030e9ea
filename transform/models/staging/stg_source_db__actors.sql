-- One row per actor, name trimmed.
with source as (
    -- By name, not *: a view keeps what * meant when it was created.
    select actor_id, actor_name
    from {{ source('source_db', 'actors') }}
)

select
    actor_id::integer as actor_id,
    trim(actor_name)::text as actor_name
from source
