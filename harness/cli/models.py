"""One model at a time: ``harness assets`` (the offline demo), ``harness build`` (a recipe or a
recorded row into a model folder) and ``harness eval`` (score a model and record it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from harness.cli.common import (
    DEFAULT_DB,
    DbOption,
    DeviceOption,
    DtypeOption,
    LogOption,
    StockScoringOption,
    app,
    apply_profile,
    check_positive,
    console,
    format_value,
    make_scorer,
    open_leaderboard,
    parse_suite_option,
    score_and_record,
    user_errors,
)
from harness.errors import HarnessError


@app.command()
@user_errors
def assets(
    donors: Annotated[
        bool, typer.Option(help="Also train the demo's DPO donors (cached; about 9 minutes on 2 CPU cores).")
    ] = False,
) -> None:
    """Fetch and prepare the offline demo assets (model + benchmark data, optionally DPO donors)."""
    from harness.assets import prepare_assets

    info = prepare_assets(console=console)
    print(info.describe())
    if donors:
        from harness.align.donors import prepare_demo_donors

        print(prepare_demo_donors(console=console).describe())


@app.command()
@user_errors
def build(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the model to.")],
    recipe: Annotated[
        Path | None, typer.Argument(help="Recipe YAML (a mergekit config, + optional align); or --trial.")
    ] = None,
    trial: Annotated[
        str | None,
        typer.Option(
            help="Rebuild this leaderboard row (an id from `harness leaderboard`) from --db, exactly as recorded."
        ),
    ] = None,
    route: Annotated[str, typer.Option(help="auto | memory | disk (mergekit run_merge).")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Allow a non-empty --out.")] = False,
    suite: Annotated[str | None, typer.Option(help="Also score the model on these suites.")] = None,
    limit: Annotated[int | None, typer.Option(help="Questions per task when scoring.")] = None,
    db: DbOption = DEFAULT_DB,
    storage: LogOption = None,
    stock_scoring: StockScoringOption = False,
    device: DeviceOption = None,
    dtype: DtypeOption = "auto",
) -> None:
    """Build one model from a recipe, or rebuild a leaderboard row (--trial), into a folder
    ready for the hub (optionally score and record it).

    The folder holds the weights, config.json, the tokenizer, mergekit_config.yml (the merge,
    for `mergekit-yaml`), recipe.yaml and a README.md model card (with the leaderboard's scores
    for --trial or --suite). Upload it with `hf upload YOUR_NAME/MODEL_NAME FOLDER`.
    """
    from harness.align.trainer import describe_step
    from harness.merge import build_model, choose_route, prepare_out_dir, write_card
    from harness.placement import Placement
    from harness.recipe import load_recipe, resolve_recipe

    if (recipe is None) == (trial is None):
        raise HarnessError(
            "give either a recipe file or --trial ID", "e.g. `harness build --trial ID --out models/best`"
        )
    if trial is not None and suite:
        raise HarnessError(
            f"--suite with --trial: trial {trial!r} is scored on the leaderboard already",
            "leave --suite out (the card carries its scores), or build its recipe file with --suite",
        )
    if route not in ("auto", "memory", "disk"):
        raise HarnessError(f"unknown route {route!r}", "use auto, memory or disk")
    check_positive("--limit", limit)
    placement = Placement.decide(device, dtype)
    board = None
    if trial is not None:
        board = open_leaderboard(db, storage)
        resolved = resolve_recipe(_recorded_recipe(board, trial), where=f"trial {trial}")
    else:
        assert recipe is not None
        resolved = resolve_recipe(load_recipe(recipe), where=str(recipe))
    choose_route(resolved, route)  # type: ignore[arg-type]
    prepare_out_dir(out, overwrite)
    scorer = (
        make_scorer(
            parse_suite_option(suite), limit, db, storage=storage, fast=not stock_scoring, placement=placement
        )
        if suite
        else None
    )
    with console.status(
        f"building {format_value(resolved.recipe.display_name())} on {format_value(placement.describe())}"
    ):
        built = build_model(resolved, out_dir=out, route=route, placement=placement)  # type: ignore[arg-type]
    console.print(
        f"built [bold]{format_value(built.recipe.display_name())}[/] ({built.num_parameters / 1e6:.1f}M params, "
        f"{built.model.config.num_hidden_layers} layers, {built.route}, {built.dtype} on "
        f"{format_value(placement.device)}) in {built.seconds:.1f}s -> {format_value(out)}"
    )
    for step in built.align_steps:
        console.print(format_value(describe_step(step)), soft_wrap=True)
    if scorer is not None:
        from harness.record import TrialRecord

        record = TrialRecord(
            name=built.recipe.display_name(),
            source="build",
            recipe_yaml=built.recipe.to_yaml(),
            recipe_hash=built.recipe.content_hash(),
            merge_method=resolved.merge_config.merge_method,
            build_seconds=built.seconds,
            num_parameters=built.num_parameters,
            dtype=built.dtype,
            model_ref=str(out),
            align_method=built.recipe.align.method if built.recipe.align else None,
            align_steps=built.align_steps,
        )
        score_and_record(scorer, built.model, built.tokenizer, record)
        board, trial = scorer.board, record.id
    if board is not None:  # the card with the row's scores (and its study's references)
        write_card(out, resolved.recipe, resolved.merge_config, board=board, trial_id=trial)
    console.print(
        format_value(f"model card: {out / 'README.md'}; upload with `hf upload YOUR_NAME/MODEL {out}`")
    )


def _recorded_recipe(board: Any, trial_id: str) -> Any:
    """The recipe a leaderboard row was built from, exactly as recorded (alignment and seed
    included); an unknown, pruned, failed or recipe-less row is one line, before any work."""
    from harness.recipe import recipe_from_dict
    from harness.recipe.validate import parse_yaml

    if board.log is not None:
        board.refresh()
    if not board.path.exists():
        raise HarnessError(
            f"no leaderboard database at {board.path}", "pass the --db the trial was recorded in"
        )
    row = board.trial(trial_id)
    if row is None:
        raise HarnessError(f"no trial {trial_id!r} in {board.path}", "take an id from `harness leaderboard`")
    if row["status"] != "ok":
        raise HarnessError(
            f"trial {trial_id!r} is {row['status']}: its model was never scored in full",
            "pick an ok row from `harness leaderboard`",
        )
    if not row.get("recipe_yaml"):
        raise HarnessError(
            f"trial {trial_id!r} has no recipe (it scored an existing model: {row.get('model_ref')})",
            "pick a search or build trial",
        )
    where = f"trial {trial_id}"
    return recipe_from_dict(parse_yaml(row["recipe_yaml"], where), where)


@app.command("eval")
@user_errors
def eval_(
    model: Annotated[str, typer.Argument(help="demo:<name>, a local path or a hub id.")],
    suite: Annotated[
        str, typer.Option(help="Comma-separated suites (h4, mmlu, kmmlu) or lm-eval tasks.")
    ] = "h4",
    limit: Annotated[int | None, typer.Option(help="Questions per task (quick runs).")] = None,
    profile: Annotated[
        str | None, typer.Option(help="cpu-quick: a small per-task limit for 2-core CPUs.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Your benchmark data (else $HARNESS_DATA_DIR, demo assets, hub)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="lm-eval batch size.")] = 8,
    device: DeviceOption = None,
    dtype: DtypeOption = "auto",
    name: Annotated[str | None, typer.Option(help="Leaderboard name (default: the model reference).")] = None,
    db: DbOption = DEFAULT_DB,
    storage: LogOption = None,
    stock_scoring: StockScoringOption = False,
) -> None:
    """Score one model with lm-eval and record it on the leaderboard."""
    from harness.merge.loading import load_pretrained, model_facts
    from harness.placement import Placement
    from harness.record import TrialRecord

    check_positive("--limit", limit)
    check_positive("--batch-size", batch_size)
    if profile is not None:
        limit, batch_size = apply_profile(profile, limit, batch_size)
    if data_dir is not None and not data_dir.is_dir():
        raise HarnessError(f"--data-dir {data_dir} is not a folder", "pass the folder holding your datasets")
    suites = parse_suite_option(suite)
    placement = Placement.decide(device, dtype)
    scorer = make_scorer(
        suites,
        limit,
        db,
        data_dir=data_dir,
        batch_size=batch_size,
        storage=storage,
        fast=not stock_scoring,
        placement=placement,
    )
    with console.status(f"loading {escape(model)} on {format_value(placement.describe())}"):
        loaded, tokenizer, _ = load_pretrained(model, device=placement.device, dtype=placement.dtype)
    num_parameters, dtype_name = model_facts(loaded)
    trial = TrialRecord(
        name=name or model, source="eval", model_ref=model, num_parameters=num_parameters, dtype=dtype_name
    )
    score_and_record(scorer, loaded, tokenizer, trial)
