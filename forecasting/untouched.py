"""How much of its RAM a request will never touch, learned from history (remote memory priced by use).

Pond (ASPLOS 2023) pools the memory a VM is predicted never to touch; here the prediction is read off the
history of the same user and application type. Per VM of the history: its rented RAM (`ram_alloc_gib`)
against a high percentile of what it used (`ram_gib`, quantile PEAK_QUANTILE over its hours), so the
untouched share is 1 − peak ÷ rented. Per (user, app type), a cautious quantile (CAUTIOUS_QUANTILE) of its
VMs' shares; a pair the history lacks takes its application type's; an application type the history
lacks gets none (0 GiB: all of its memory counts as touched). A request that states `untouched_ram_gib`
keeps it.
"""
from __future__ import annotations

import numpy as np
import polars as pl

PEAK_QUANTILE = 0.99
"""What a VM used: this quantile of its hourly used RAM (a high percentile, not the mean)."""
CAUTIOUS_QUANTILE = 0.25
"""Of the shares of a group's VMs, this quantile is the group's prediction (a quarter of them touch more)."""


def untouched_shares(history: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """{"pair": user_id, app_type, share, vms; "app": app_type, share, vms} from a history that has
    `ram_alloc_gib`; empty frames when it has not (nothing can be learned then)."""
    empty = {"pair": pl.DataFrame(schema={"user_id": pl.Utf8, "app_type": pl.Utf8, "share": pl.Float64,
                                          "vms": pl.UInt32}),
             "app": pl.DataFrame(schema={"app_type": pl.Utf8, "share": pl.Float64, "vms": pl.UInt32})}
    if history is None or "ram_alloc_gib" not in history.columns or history.height == 0:
        return empty
    vms = (history.filter(pl.col("ram_alloc_gib").is_not_null() & (pl.col("ram_alloc_gib") > 0))
           .group_by("vm_id", "user_id", "app_type")
           .agg(peak=pl.col("ram_gib").quantile(PEAK_QUANTILE), rented=pl.col("ram_alloc_gib").max())
           .with_columns(share=(1 - pl.col("peak") / pl.col("rented")).clip(0.0, 1.0)))
    if vms.height == 0:
        return empty
    pair = (vms.group_by("user_id", "app_type").agg(pl.col("share").quantile(CAUTIOUS_QUANTILE), vms=pl.len())
            .sort("user_id", "app_type"))
    app = vms.group_by("app_type").agg(pl.col("share").quantile(CAUTIOUS_QUANTILE), vms=pl.len()).sort("app_type")
    return {"pair": pair, "app": app}


def with_untouched(requests: pl.DataFrame, history: pl.DataFrame | None) -> tuple[pl.DataFrame, dict]:
    """`requests` with untouched_ram_gib filled where it is null (floor of ram_gib × the predicted share),
    and what was done: counts of requests given a share by their pair, by their app type, or none."""
    if "untouched_ram_gib" not in requests.columns:
        requests = requests.with_columns(untouched_ram_gib=pl.lit(None, dtype=pl.Int64))
    shares = untouched_shares(history)
    missing = requests["untouched_ram_gib"].is_null()
    joined = (requests.join(shares["pair"].select("user_id", "app_type", pl.col("share").alias("pair_share")),
                            on=["user_id", "app_type"], how="left", maintain_order="left")
              .join(shares["app"].select("app_type", pl.col("share").alias("app_share")), on="app_type", how="left",
                    maintain_order="left"))
    share = joined["pair_share"].fill_null(joined["app_share"]).fill_null(0.0).to_numpy()
    predicted = np.floor(requests["ram_gib"].to_numpy() * share + 1e-9).astype(np.int64)
    filled = requests.with_columns(untouched_ram_gib=pl.when(missing).then(pl.Series(predicted))
                                   .otherwise(pl.col("untouched_ram_gib")).cast(pl.Int64))
    summary = {"stated": int((~missing).sum()),
               "by_user_and_app": int((missing & joined["pair_share"].is_not_null()).sum()),
               "by_app": int((missing & joined["pair_share"].is_null() & joined["app_share"].is_not_null()).sum()),
               "none": int((missing & joined["pair_share"].is_null() & joined["app_share"].is_null()).sum()),
               "predicted_gib": int(np.where(missing.to_numpy(), predicted, 0).sum())}
    return filled, summary
