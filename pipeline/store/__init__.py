"""Store I/O: schemas, per-sequence staging, the region-parallel Zarr v3 writer, the reader and
schema migrations."""

from .migrations import MIGRATIONS, Migration, MigrationResult, migrate_store, migration_path
from .reader import SchemaUpgradeWarning, StoreSchema, check_store_schema, open_store, sequence, sequence_index
from .schema import (
    SUPPORTED_MAJOR,
    ArraySpec,
    DimSpec,
    Schema,
    SchemaError,
    available_versions,
    load_schema,
    validate_arrays,
    validate_store,
)
from .staging import WRITER_DERIVED, StagedSequence, list_staged, load_staged, stage_sequence
from .writer import (
    LABELLED_DIMS,
    Chunking,
    StorePlan,
    create_store,
    finalize_store,
    plan_store,
    region_plan,
    temporary_path,
    write_frame_region,
    write_store,
    write_window_region,
)

__all__ = [
    "LABELLED_DIMS",
    "MIGRATIONS",
    "SUPPORTED_MAJOR",
    "ArraySpec",
    "Chunking",
    "DimSpec",
    "Migration",
    "MigrationResult",
    "Schema",
    "SchemaError",
    "SchemaUpgradeWarning",
    "StagedSequence",
    "StorePlan",
    "StoreSchema",
    "WRITER_DERIVED",
    "available_versions",
    "check_store_schema",
    "create_store",
    "finalize_store",
    "list_staged",
    "load_schema",
    "load_staged",
    "migrate_store",
    "migration_path",
    "open_store",
    "plan_store",
    "region_plan",
    "sequence",
    "sequence_index",
    "stage_sequence",
    "temporary_path",
    "validate_arrays",
    "validate_store",
    "write_frame_region",
    "write_store",
    "write_window_region",
]
