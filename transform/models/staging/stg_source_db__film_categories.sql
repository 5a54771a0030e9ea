-- One row per film and category. The source's category_id numbers the
-- assignment row, not the category, so it is renamed film_category_id.
with source as (
    -- By name, not *: a view keeps what * meant when it was created.
    select category_id, film_id, category_name
    from {{ source('source_db', 'film_category') }}
)

select
    category_id::integer as film_category_id,
    film_id::integer as film_id,
    trim(category_name)::text as category_name
from source
