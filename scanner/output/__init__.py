"""Output: row dataclasses (the schema), Arrow schema derivation, and the Parquet writer."""
