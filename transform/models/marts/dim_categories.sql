-- One row per distinct category name. The source has no category table, so
-- the key is derived from the name: md5 keeps it stable across reloads and
-- independent of row order, unlike a row_number().
select
    md5(category_name) as category_key,
    category_name,
    count(distinct film_id)::integer as film_count
from {{ ref('stg_source_db__film_categories') }}
group by category_name
