"""Token prices from configs/prices.yaml and the cost of a call computed from them."""

from __future__ import annotations

import polars as pl

from pydantic import Field, PrivateAttr

from loop_pipeline.config import ConfigModel


class ModelPrice(ConfigModel):
    input_per_mtok: float = Field(alias="input", ge=0)  # USD per 1M input tokens
    output_per_mtok: float = Field(alias="output", ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


class PriceTable(ConfigModel):
    """``configs/prices.yaml``: model name prefix -> {input, output} in USD per 1M tokens."""

    FILE = "prices"
    models: dict[str, ModelPrice] = Field(min_length=1)
    _keys: list[str] = PrivateAttr(default_factory=list)

    def model_post_init(self, _context) -> None:
        # Longest key first, so `gpt-4o-mini` wins over `gpt-4o` for `gpt-4o-mini-2024-07-18`.
        self._keys = sorted(self.models, key=len, reverse=True)

    def lookup(self, model: str) -> ModelPrice | None:
        lowered = model.lower()
        for key in self._keys:
            if lowered.startswith(key.lower()):
                return self.models[key]
        return None

    def fill_costs(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Set ``cost_usd`` (and ``cost_source='computed'``) where a row has tokens but no cost.

        Rows whose model has no price keep a null cost: an unknown cost stays unknown.
        """
        models = frame.get_column("model").unique().drop_nulls().to_list()
        priced = [(m, self.lookup(m)) for m in models]
        priced = [(m, p) for m, p in priced if p is not None]
        table = pl.DataFrame(
            {
                "model": [m for m, _ in priced],
                "_in_price": [p.input_per_mtok for _, p in priced],
                "_out_price": [p.output_per_mtok for _, p in priced],
            },
            schema={"model": pl.String, "_in_price": pl.Float64, "_out_price": pl.Float64},
        )
        # Times 1e-6, not over 1e6: polars divides a column by a literal as a multiplication by its
        # reciprocal, but a one-row column by a true division, so `/ 1e6` made the last bit of a
        # cost depend on how the rows were chunked.
        computed = (
            pl.col("input_tokens") * pl.col("_in_price") + pl.col("output_tokens") * pl.col("_out_price")
        ) * 1e-6
        needs = pl.col("cost_usd").is_null() & computed.is_not_null()
        return (
            frame.join(table, on="model", how="left", maintain_order="left")
            .with_columns(
                pl.when(needs).then(computed).otherwise(pl.col("cost_usd")).alias("cost_usd"),
                pl.when(needs)
                .then(pl.lit("computed"))
                .when(pl.col("cost_usd").is_not_null())
                .then(pl.col("cost_source").fill_null("reported"))
                .otherwise(pl.lit(None, dtype=pl.String))
                .alias("cost_source"),
            )
            .drop("_in_price", "_out_price")
        )
