-- Grain: one row per film and actor cast in it (a factless fact: the event is
-- the casting). cast_size repeats the film's cast size on each of its rows, so
-- 1.0 / cast_size sums to one per film.
with film_actors as (
    select * from {{ ref('stg_source_db__film_actors') }}
)

select
    film_actor_id,
    film_id,
    actor_id,
    count(*) over (partition by film_id)::integer as cast_size
from film_actors
