-- The cast fact holds exactly the source's film-actor pairs: each row returned
-- is a pair that is in one and not the other (a lost or invented casting).
with fact as (
    select film_id, actor_id from {{ ref('fct_film_cast') }}
),

source as (
    select film_id, actor_id from {{ source('source_db', 'film_actors') }}
)

select
    coalesce(fact.film_id, source.film_id) as film_id,
    coalesce(fact.actor_id, source.actor_id) as actor_id,
    case when fact.film_id is null then 'missing from fct_film_cast'
         else 'not in the source' end as problem
from fact
full outer join source
    on source.film_id = fact.film_id and source.actor_id = fact.actor_id
where fact.film_id is null or source.film_id is null
