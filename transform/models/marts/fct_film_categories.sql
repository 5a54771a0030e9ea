-- Grain: one row per film and category it belongs to (a factless fact that
-- also bridges the many-to-many between films and categories).
select
    film_category_id,
    film_id,
    md5(category_name) as category_key
from {{ ref('stg_source_db__film_categories') }}
