"""Data layer: row schemas, format adapters, sources, tokenisation, collation and data modules."""

from lit_rlhf.data.collate import Collator
from lit_rlhf.data.datamodules import (
    PreferenceDataModule,
    PromptDataModule,
    RowDataModule,
    SFTDataModule,
    StepLabelDataModule,
    UnpairedPreferenceDataModule,
    WeakLabelDataModule,
)
from lit_rlhf.data.gatt import GAttData, build_gatt
from lit_rlhf.data.sampling import LengthGroupedBatchSampler, ResumableLoader
from lit_rlhf.data.schemas import (
    DataError,
    PreferenceRow,
    PromptRow,
    SFTRow,
    SourceNotFound,
    StepRow,
    UnpairedRow,
    WeakLabelRow,
)
from lit_rlhf.data.shifted import MetaRMDataModule
from lit_rlhf.data.sources import iter_records, read_rows, task_rows
from lit_rlhf.data.tokenize import Encoder, render_completion, render_prompt

__all__ = [
    "Collator", "DataError", "Encoder", "GAttData", "LengthGroupedBatchSampler", "MetaRMDataModule", "ResumableLoader",
    "PreferenceDataModule", "PreferenceRow",
    "PromptDataModule", "PromptRow", "RowDataModule", "SFTDataModule", "SFTRow", "SourceNotFound",
    "StepLabelDataModule", "StepRow", "UnpairedPreferenceDataModule", "UnpairedRow", "WeakLabelDataModule",
    "WeakLabelRow", "iter_records", "read_rows", "render_completion", "render_prompt",
    "build_gatt", "task_rows",
]
