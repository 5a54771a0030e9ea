-- One row per film, with its categories and cast size folded in for
-- filtering and display (the per-pair detail is in the facts).
with films as (
    select * from {{ ref('stg_source_db__films') }}
),

categories as (
    select
        film_id,
        count(*) as category_count,
        string_agg(category_name, ', ' order by category_name) as categories
    from {{ ref('stg_source_db__film_categories') }}
    group by film_id
),

cast_sizes as (
    select film_id, count(*) as cast_size
    from {{ ref('stg_source_db__film_actors') }}
    group by film_id
)

select
    films.film_id,
    films.title,
    films.release_date,
    extract(year from films.release_date)::integer as release_year,
    films.price,
    films.rating,
    films.user_rating,
    coalesce(categories.category_count, 0)::integer as category_count,
    categories.categories,
    coalesce(cast_sizes.cast_size, 0)::integer as cast_size
from films
left join categories on categories.film_id = films.film_id
left join cast_sizes on cast_sizes.film_id = films.film_id
