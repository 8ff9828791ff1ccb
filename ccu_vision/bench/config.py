"""Benchmark configurations: ``smoke`` (seconds, CI) and ``default`` (the published numbers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..evalset import EvalConfig

FAISS_SCALES = {"smoke": (10_000,), "default": (10_000, 100_000), "full": (10_000, 100_000, 1_000_000)}


@dataclass
class BenchConfig:
    """Everything that sizes a bench run (recorded verbatim in results.json)."""

    name: str = "default"
    eval: EvalConfig = field(default_factory=EvalConfig)
    k: int = 10  # ranked list length per query (all methods)
    # speed
    dump_n: int = 1000
    dump_min_side: int = 640
    dump_max_side: int = 1600
    embed_batch: int = 16
    embed_repeats: int = 5
    # cost growth: scan subsets of the dump, and catalogs with extra (synthetic) references
    growth_dumps: tuple[int, ...] = (250, 500, 1000)
    growth_extra_refs: tuple[int, ...] = (2000, 10000)
    growth_extra_dump: int = 250
    # faiss
    faiss_scale: str = "default"
    faiss_queries: int = 200
    faiss_batch: int = 32
    seed: int = 1234

    @property
    def faiss_sizes(self) -> tuple[int, ...]:
        return FAISS_SCALES[self.faiss_scale]

    @classmethod
    def smoke(cls) -> BenchConfig:
        """Seconds-long configuration for CI: tiny eval set, 20-image dump, 10k FAISS."""
        return cls(
            name="smoke", eval=EvalConfig.tiny(), dump_n=20, dump_min_side=320, dump_max_side=640,
            embed_batch=4, embed_repeats=2, growth_dumps=(10, 20), growth_extra_refs=(40,), growth_extra_dump=10,
            faiss_scale="smoke", faiss_queries=40, faiss_batch=20,
        )

    @staticmethod
    def eval_preset(size: str) -> EvalConfig:
        """Evaluation set sizes: ``tiny`` (smoke), ``small`` (a quick look, minutes), ``default`` (published)."""
        if size == "tiny":
            return EvalConfig.tiny()
        if size == "small":
            return EvalConfig(n_brands=60, pos_per_brand=2, n_unregistered=60, n_clean=40, n_products=40,
                              edits_per_product=2, n_lookalikes=40)
        if size == "default":
            return EvalConfig()
        raise ValueError(f"unknown evaluation set size {size!r} (tiny, small, default)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["faiss_sizes"] = list(self.faiss_sizes)
        return d
