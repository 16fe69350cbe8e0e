-- What ue-resync installed and the catalogue no longer holds as it was (sql/verify.sql).
SELECT kind, name, problem FROM resync.catalogue_differences()
