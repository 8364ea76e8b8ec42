"""Running a stage's chunk tasks on a Dask cluster (imported only with --dask)."""
