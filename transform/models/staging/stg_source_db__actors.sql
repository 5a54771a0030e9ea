-- One row per actor, name trimmed.
with source as (
    select * from {{ source('source_db', 'actors') }}
)

select
    actor_id::integer as actor_id,
    trim(actor_name)::text as actor_name
from source
