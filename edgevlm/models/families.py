"""The family table: each VLM family edgevlm builds and converts (MobileVLM, TinyLLaVA, Bunny, MoE-LLaVA), in one row.

A row says what the family's upstream checkpoints use (prompt template, default projector), which module of
`edgevlm.convert` reads them, and which presets (`models.presets`) it has; presets and converters make their
configs through `Family.config`, so the family's facts are written once. `tests/test_tables.py` checks that
every family has its presets and its converter, and every preset and converter a family.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgevlm.config import LLMConfig, MoEConfig, ProjectorConfig, VisionConfig, VLMConfig
from edgevlm.registry import Registry


@dataclass(frozen=True)
class Family:
    name: str  # VLMConfig.family, and the source name `edgevlm convert --from` takes
    template: str  # the prompt template its checkpoints were trained with (edgevlm.bundle.template.TEMPLATES)
    projector: str  # its projector where a checkpoint does not say otherwise (edgevlm.models.projectors)
    converter: str  # the module of edgevlm.convert that reads its checkpoints (it registers the source `name`)
    presets: tuple[str, ...]  # its presets (edgevlm.models.presets.PRESETS), real-size and tiny

    def config(self, vision: VisionConfig, llm: LLMConfig, projector: ProjectorConfig | None = None,
               template: str | None = None, moe: MoEConfig | None = None) -> VLMConfig:
        """A VLMConfig of this family: its template and projector unless given."""
        return VLMConfig(family=self.name, template=template or self.template, vision=vision,
                         projector=projector or ProjectorConfig(kind=self.projector), llm=llm,
                         moe=moe or MoEConfig())


FAMILIES: Registry[Family] = Registry("model family")


def _row(family: Family) -> None:
    FAMILIES.register(family.name)(family)


_row(Family("mobilevlm", "vicuna_v1", "ldpv2", "mobilevlm",
            ("mobilevlm-1.7b", "mobilevlm-v2-1.7b", "mobilevlm-v2-3b", "mobilevlm-tiny", "mobilevlm-v2-tiny")))
_row(Family("tinyllava", "vicuna_v1", "mlp2x_gelu", "tinyllava",
            ("tinyllava-phi2-siglip-3.1b", "tinyllava-tinyllama-siglip-1.5b", "tinyllava-tiny")))
_row(Family("bunny", "bunny", "mlp2x_gelu", "bunny", ("bunny-v1.0-3b", "bunny-v1.0-4b", "bunny-tiny")))
_row(Family("moe-llava", "vicuna_v1", "mlp2x_gelu", "moe_llava",
            ("moe-llava-stablelm-1.6bx4", "moe-llava-phi2-2.7bx4", "moe-llava-tiny")))
