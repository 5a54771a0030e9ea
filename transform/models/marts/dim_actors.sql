-- One row per actor, including actors not cast in any film yet.
with actors as (
    select * from {{ ref('stg_source_db__actors') }}
),

appearances as (
    select actor_id, count(*) as film_count
    from {{ ref('stg_source_db__film_actors') }}
    group by actor_id
)

select
    actors.actor_id,
    actors.actor_name,
    coalesce(appearances.film_count, 0)::integer as film_count
from actors
left join appearances on appearances.actor_id = actors.actor_id
