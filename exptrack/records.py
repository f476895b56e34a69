"""Every name a record is filed under: Optuna user-attr keys, MLflow tag keys, artifact and figure
names, the Optuna state -> MLflow run status map and the trial run name format.

Written once here so the search that files a record and the command that reads it back cannot
drift apart; no other module spells one of these strings.
"""

from __future__ import annotations

# --- the figures training reports, by their bare names: what an objective or constraint may name --
# (training's FitResult reports them; they live here because core `study.py` checks a study's
# metric and constraints by them at load and tracking picks the runs view's columns by them)
EPOCH_METRICS = ("val_accuracy", "val_loss", "train_loss")  # per epoch, in fit's history
# FitResult.profile's keys (training.profiling): add a figure here when profiling reports a new one
PROFILE_FIGURES = (
    "seconds_per_epoch",
    "train_samples_per_second",
    "train_seconds",
    "data_seconds",
    "compute_seconds",
    "eval_seconds",
    "trainable_params",
    "frozen_params",
    "flops_per_sample",
    "achieved_tflops",
    "mfu",  # CUDA only
    "peak_cuda_allocated_mb",  # CUDA only
    "peak_cuda_reserved_mb",  # CUDA only
    "peak_rss_mb",  # this trial's peak resident memory (Linux)
    "peak_rss_growth_mb",
    "process_peak_rss_mb",  # where the per-trial peak cannot be measured
    "feature_cache_seconds_saved",  # FEATURE_CACHE_SAVED
)
# the frozen stages' seconds the feature cache saved a trial (training.feature_cache)
FEATURE_CACHE_SAVED = "feature_cache_seconds_saved"
# FitResult.profile's text figures: never an objective (on MLflow every figure is a tag under `profile/`)
FEATURE_CACHE = "feature_cache"  # hit | miss | miss:from_depth_<e> | off:<reason>
PROFILE_TEXT = (FEATURE_CACHE,)

# --- Optuna study user attrs: what the study was declared with (checked on resume) -------------
STUDY_METRIC_ATTR = "metric"  # the first (or only) objective's figure
STUDY_OBJECTIVES_ATTR = "objectives"  # every objective's figure, in Optuna's value order
STUDY_CONSTRAINTS_ATTR = "constraints"  # the declared constraints as written (`seconds_per_epoch <= 30`)
STUDY_SPACE_ATTR = "search_space"
STUDY_FIXED_ATTR = "fixed"
# the training function its trials ran (`Study.objective_name`: finetune, train, my_train:train)
STUDY_TRAINING_ATTR = "training_function"
# the study file a search last ran from (absolute): `exp export` records it, so `exp train` loads
# it first and the losses, backbones and datasets it registers are known again
STUDY_FILE_ATTR = "study_file"
STUDY_DASHBOARD_ATTR = "dashboard"  # the dashboard the study was searched with (its name and text)
STUDY_UID_ATTR = "study_uid"  # set once when the study is created: which MLflow parent run is its own
STUDY_JOINS_ATTR = "exptrack:worker_joins"  # a study system attr: processes that joined it so far

# --- Optuna trial user attrs ---------------------------------------------------------------------
RUN_ID_ATTR = "mlflow_run_id"  # the trial's MLflow run id
# a journaled tell's constraint values (`feasibility.record`), popped before its attrs are set
JOURNAL_CONSTRAINTS_KEY = "exptrack:constraints"
RUN_PENDING_ATTR = "mlflow_run_pending"  # its run could not be opened: written after the outage
CONFIG_ATTR = "config"  # the trial's full TrialConfig as a dict
FAIL_REASON_ATTR = "fail_reason"  # why a trial failed (exception, signal, dead worker)
RETRY_ATTR = "retry_of"  # on a retried trial: the number of the killed trial it repeats
# on a trial a SIGTERM stopped with its checkpoint kept: the epoch it holds (the next search queues
# a retry, which resumes there); on a retry that resumed: the epoch it resumed after (and a run tag)
CHECKPOINT_EPOCH_ATTR = "checkpoint_epoch"
RESUMED_ATTR = "resumed_from_epoch"
WORKER_ATTR = "worker"  # the process running the trial, as host:pid:start-time
PROFILE_ATTR = "profile"  # the trial's profiling figures
CLASSES_ATTR = "class_count"  # the trial's dataset's class count: chance is 1/classes
# When the weights asked for could not be had (ImageNet offline), the trial trains with what it
# could get and its config says so (`weights: none`); this records what was asked for. Also the
# name of the MLflow param and of the provenance key that carry the same note.
WEIGHTS_REQUESTED = "weights_requested"
RUN_URL_ATTR = "mlflow_run_url"  # the trial's MLflow run page, when the tracking store is a server
# in the profile attr only (not an MLflow metric): unix time training began, after setup; the gap
# from one trial's end to the next one's first step is read from it (benchmarks/gpu_study.py)
TRAIN_STARTED_AT = "train_started_at"
# the Optuna constraint (Trial.set_constraint) every trial carries where the sampler steers by
# constraints: 1 when the trial ran out of memory, else 0
OUT_OF_MEMORY = "out_of_memory"
ENQUEUED_ATTR = "enqueued_from"  # a warm start: the file, study trial or starting point it repeats
VAL_SAMPLES_ATTR = "validation_images"  # the trial's validation split size: a val_accuracy's binomial error
# On the study: what `exp confirm` measured, trial number (text) -> {"seeds": n, "<metric>_mean": ...,
# "<metric>_sd": ..., "<metric>_ci_low"/"_ci_high": ...} for the metric and its test counterpart;
# the search summary's noise line and `exp export`'s provenance read it
CONFIRMED_ATTR = "confirmed"

# --- MLflow experiment tags ----------------------------------------------------------------------
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
EXPERIMENT_KIND_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# A saved view of the experiment's runs table (the MLflow UI's own "Save view"), which `exp ui` links to.
RUNS_VIEW_TAG = "mlflow.sharedViewState.exptrack"
RUNS_VIEW_KEY = RUNS_VIEW_TAG.rsplit(".", 1)[1]  # the URL's viewStateShareKey

# --- MLflow run tags ------------------------------------------------------------------------------
ROLE_TAG = "exptrack.role"  # which of the roles below a run plays
ROLE_STUDY, ROLE_TRIAL, ROLE_TRAIN = "study", "trial", "train"
ROLE_CONFIRM = "confirm"  # an `exp confirm` repeat of a trial's config with a fresh seed
STUDY_TAG = "exptrack.study"  # the Optuna study name (on experiments and runs)
TRIAL_TAG = "exptrack.trial"  # the trial number, on a trial run
# on the study run: what the end of a search warned (all trials at chance, best at a range's edge)
SEARCH_WARNINGS_TAG = "exptrack.search_warnings"
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own nesting of a trial run under the study run
HOST_TAG = "host"
FAIL_REASON_TAG = "exptrack.fail_reason"
RETRY_OF_TAG = "exptrack.retry_of"
RESUMED_TAG = "exptrack.resumed_from_epoch"  # a resumed retry's setup fact RESUMED_ATTR, as its tag
INFEASIBLE_TAG = "exptrack.infeasible"  # the constraints a trial broke
TRIAL_STORAGE_TAG = "optuna.storage"  # on a trial run: where its Optuna trial lives (password removed)
# On a trial run: its Optuna state (COMPLETE, PRUNED, FAIL), readable where MLflow's status icon
# shows a pruned trial like a failure, and the epoch a pruned trial stopped after.
STATE_TAG, PRUNED_EPOCH_TAG = "state", "pruned_at_epoch"
# MLflow's run description (the run page's "Description", the runs table's column): a pruned run
# says so there, since MLflow draws its KILLED status with the same red icon as a failure
DESCRIPTION_TAG = "mlflow.note.content"


def pruned_description(epoch: int) -> str:
    """What a pruned trial's run description says."""
    return (
        f"PRUNED after epoch {epoch}: the pruner stopped this trial early (a normal outcome, not a "
        "failure); MLflow shows its status as KILLED, with the same red icon as a failed run."
    )
# on the study's parent run
STORAGE_TAG, SAMPLER_TAG, PRUNER_TAG = "storage", "sampler", "pruner"
METRIC_TAG, DIRECTION_TAG, OPTUNA_STUDY_TAG = "metric", "direction", "optuna_study"  # comma-joined
CONSTRAINTS_TAG = "constraints"
STUDY_UID_TAG = "exptrack.study_uid"  # the Optuna study's STUDY_UID_ATTR: the parent run belongs to it
# on an `exp train` run
REPRODUCES_TAG = "exptrack.reproduces"  # study/trial-NNN
SOURCE_RUN_TAG = "exptrack.source_run_id"  # the trial run it reproduces
CONFIG_FILE_TAG = "exptrack.config_file"
CONFIRMS_TAG = "exptrack.confirms"  # on a confirm run: the trial number whose config it repeats
CONFIRM_SEED_TAG = "exptrack.confirm_seed"  # ... and the seed it trained with
# on the study run: `exp confirm`'s verdict (whether the top two differ) and its table
CONFIRM_SUMMARY_TAG = "exptrack.confirm_summary"
CONFIRM_ARTIFACT = "confirm.csv"
OWNER_TAG = "exptrack.owner"  # the process training it, host:pid:start-time: closed if it dies
# on a trial run written after an outage: "journal" (from this host's journal of the trial) or
# "optuna: ..." (rebuilt from the Optuna trial, naming the figures that could not be restored)
RESTORED_TAG = "exptrack.restored"
SETUP_TAG_PREFIX = "exptrack."  # + a fact training reports at setup (weights_source, device, ...)
# Setup facts that also describe the run's dataset input (`mlflow.log_input`: the UI's Datasets column)
DATASET_FACT, DATASET_DIGEST_FACT = "dataset", "dataset_digest"
# its profile, as fit names them; test_samples is 0 where there is no test split
DATASET_SIZE_FACTS = ("train_samples", "val_samples", "test_samples", "num_classes")
DATASET_CONTEXT_TAG = "mlflow.data.context"  # MLflow's tag on a dataset input: what it was used for

# --- MLflow params, metrics and artifacts -----------------------------------------------------------
SEARCH_SPACE_PARAM = "search_space"  # on the study run
FINISHED_TRIALS_METRIC = "finished_trials"
PARETO_SIZE_METRIC = "pareto_front_size"  # on a multi-objective study's run
BEST_PREFIX = "best_"  # best_val_accuracy: on a study run a metric, on a trial run a tag (its best epoch)
CONFIG_ARTIFACT = "config.yaml"
TRACEBACK_ARTIFACT = "traceback.txt"
DASHBOARD_ARTIFACT = "dashboard.html"
DASHBOARD_IMAGE = "dashboard.png"  # its main plots as an image: the artifact viewer shows it (the page previews blank)
STUDY_FILES_DIR = "study"  # the study file and its search space, on the study run
MODEL_ARTIFACT = "model"  # a trained model lands at runs:/<run id>/model
# Cost figures keep bare names in training and in Optuna (`seconds_per_epoch`); on MLflow they are
# tags under this prefix (the run's Overview lists them as a table), never metrics: MLflow's metrics
# tab draws every metric, a single value as a bar chart, and puts each `prefix/` section before the
# unprefixed learning curves, which 13 cost bars pushed 2.5 screens down. A trial run's only metrics
# are its per-epoch curves (EPOCH_METRICS), so its metrics tab opens on them.
PROFILE_DIR = "profile"  # also the artifact folder of a traced run's files:
TRACE_FILE = "trace.json.gz"  # a Chrome/Perfetto trace of a few training steps
OPS_FILE = "ops.csv"  # the top operators by self time
PROFILE_PREFIX = f"{PROFILE_DIR}/"

# Optuna state -> MLflow run status, the mapping the design promises.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def profile_tag(figure: str) -> str:
    """`seconds_per_epoch` -> `profile/seconds_per_epoch`, its tag on MLflow."""
    return f"{PROFILE_PREFIX}{figure}"


def system_node(host: str, gpu: str | None) -> str:
    """The node id a run's system metrics are filed under: its host, and the GPU it trains on
    (`gpu-host-3`), so workers on several hosts and GPUs stay apart."""
    return host if gpu is None else f"{host}-gpu{gpu}"


def trial_run_name(number: int) -> str:
    """`trial-007`: the run name, the exported file's stem and the `reproduces` tag's tail."""
    return f"trial-{number:03d}"


def setup_tags(facts: dict[str, object]) -> dict[str, str]:
    """Training's setup facts as run tags (`exptrack.weights_source`, ...)."""
    return {f"{SETUP_TAG_PREFIX}{key}": str(value) for key, value in facts.items()}


# --- the `provenance:` block of an exported config (read back by `exp train`) ------------------------
PROVENANCE_BLOCK = "provenance"
PROVENANCE_STUDY, PROVENANCE_TRIAL, PROVENANCE_VALUE = "study", "trial", "value"
PROVENANCE_METRIC, PROVENANCE_RUN_ID, PROVENANCE_SEED = "metric", "mlflow_run_id", "seed"
PROVENANCE_VERSIONS = "versions"
PROVENANCE_CONFIRMED = CONFIRMED_ATTR  # what `exp confirm` measured of the trial's config, when it has
PROVENANCE_STUDY_FILE = STUDY_FILE_ATTR  # in an exported file: the study file that registers its names
TORCH_THREADS = "torch_threads"  # a profiling figure, and the provenance key `exp train` applies

# --- tidying studies (`exp studies rm|rename|copy`, `exp trials drop`) -----------------------------
COPY_OF_TAG = "exptrack.copy_of"  # on a copied study's runs: the run it was copied from
COPY_DONE_TAG = "exptrack.copy_complete"  # set last on a copied run: one without it is redone
COPIED_FROM_ATTR = "copied_from"  # on a copied study: the study (name) it was copied from
# on a dropped trial (`exp trials drop`): when and why; the trial is FAIL, kept for its number
DROPPED_ATTR = "dropped"
