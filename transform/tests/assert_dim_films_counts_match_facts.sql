-- The counts folded into dim_films agree with the facts at their own grain:
-- each row returned is a film whose category_count or cast_size is wrong.
with categories as (
    select film_id, count(*) as n from {{ ref('fct_film_categories') }} group by film_id
),

cast_rows as (
    select film_id, count(*) as n from {{ ref('fct_film_cast') }} group by film_id
)

select
    films.film_id,
    films.category_count,
    coalesce(categories.n, 0) as category_rows,
    films.cast_size,
    coalesce(cast_rows.n, 0) as cast_rows
from {{ ref('dim_films') }} as films
left join categories on categories.film_id = films.film_id
left join cast_rows on cast_rows.film_id = films.film_id
where films.category_count <> coalesce(categories.n, 0)
   or films.cast_size <> coalesce(cast_rows.n, 0)
