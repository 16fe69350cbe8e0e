-- The search_path as it was before search_path_pin.
SELECT set_config('search_path', %(search_path)s, false)
