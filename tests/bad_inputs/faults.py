"""The faults of a lab's first month (issue 15) and the tests that check each, for
docs/RELIABILITY.md: damaged checkpoints, impatient users, two runs at once, a device out of
memory. make_reliability_doc.py renders the table; test_reliability_doc.py checks that every
test it names exists (a function, or a row id of the bad-input corpus)."""

from __future__ import annotations

from dataclasses import dataclass

CORPUS = "tests/bad_inputs/test_bad_inputs.py::test_bad_input"
RESUME = "tests/training/test_resume.py"
SIGNALS = "tests/training/test_train_signals.py"
LOCKS = "tests/test_locks.py"


@dataclass(frozen=True)
class Fault:
    fault: str                  # what happens to the run, in words
    command: str
    behaviour: str              # what pfseg does: exit code, the line it prints
    left: str                   # the files afterwards
    tests: tuple[str, ...]      # "path::function" or f"{CORPUS}[row id]"


FAULTS = [
    Fault("checkpoint_latest.pt cut short (a copy, a sync tool); checkpoint_latest.prev.pt whole",
          "pfseg_train --continue",
          "exit 0: resumes from the generation before it, with one warning line naming the damaged file, "
          "why, and the generation used",
          "the run ends as an uninterrupted one would (metrics.csv rows, final weights); the kept "
          "generation is removed once the fold is finished",
          (f"{RESUME}::test_a_damaged_latest_resumes_from_the_generation_before_it",)),
    Fault("both generations damaged", "pfseg_train --continue",
          "exit 2: one line naming both files and why each cannot be used", "every file as it was",
          (f"{RESUME}::test_both_generations_damaged_is_one_line_and_changes_nothing",)),
    Fault("plans.json changed since the checkpoint was written", "pfseg_train --continue",
          "exit 2: one line naming the changed fields (notes and memory predictions aside); `--force` "
          "resumes anyway, with a warning line naming them",
          "every file as it was, the network folder's copy of plans.json included",
          (f"{RESUME}::test_changed_plans_refuse_to_resume_unless_forced", f"{CORPUS}[plans-changed-train]")),
    Fault("SIGTERM or Ctrl-C", "pfseg_train",
          "checkpoint_latest.pt saved at the next iteration boundary, exit 143 / 130; --continue restarts "
          "that epoch", "a loadable checkpoint_latest.pt",
          (f"{SIGNALS}::test_a_signal_saves_checkpoint_latest_and_exits",)),
    Fault("a second SIGTERM during a step that takes minutes", "pfseg_train",
          "exit 143 within seconds: `received SIGTERM again: stopping at once, without saving`, then "
          "which checkpoint is the last complete one",
          "checkpoint_latest.pt byte-identical, no temporary file, loader workers gone, locks released",
          (f"{SIGNALS}::test_a_second_signal_stops_at_once",)),
    Fault("both signals while checkpoint_latest.pt is being written", "pfseg_train",
          "exit 143: the half-saved temporary file is removed; --continue finishes from the last one",
          "the previous checkpoint_latest.pt whole, no temporary file",
          (f"{SIGNALS}::test_a_second_signal_during_a_checkpoint_save",)),
    Fault("kill -9 of a training", "pfseg_train",
          "its loader workers end with it (the kernel's parent-death signal); its lock is stale, and the "
          "next run takes it over with a log line and resumes",
          "the last complete checkpoint; a stale `.pfseg.lock`, taken over",
          (f"{SIGNALS}::test_kill_9_two_runs_and_a_stale_lock",)),
    Fault("two pfseg_train on one fold folder", "pfseg_train",
          "the second: exit 2, one line naming the running one (pid, host, start, command)",
          "the running fold's files untouched",
          (f"{SIGNALS}::test_kill_9_two_runs_and_a_stale_lock", f"{CORPUS}[locked-train]")),
    Fault("pfseg_train while pfseg_plan_and_preprocess rewrites its dataset, and the reverse",
          "pfseg_train, pfseg_plan_and_preprocess",
          "the second: exit 2, one line naming the running one (training leaves a reader's marker, "
          "preprocessing holds the dataset's lock)", "nothing written",
          (f"{CORPUS}[locked-train-dataset]", f"{CORPUS}[locked-plan_and_preprocess]")),
    Fault("two pfseg_predict into one output folder", "pfseg_predict",
          "the second: exit 2, one line naming the running one", "nothing written",
          (f"{CORPUS}[locked-predict]",)),
    Fault("a lock whose holder is gone: pid gone, pid reused by another process, machine restarted, "
          "lock file unreadable; several runs finding one stale lock", "every locking command",
          "taken over with a warning line; of several runs exactly one takes it; a lock from another "
          "host is never guessed at (the line names the file to delete)", "one lock, the new holder's",
          (f"{LOCKS}::test_a_stale_lock_is_taken_over_with_a_log_line",
           f"{LOCKS}::test_of_several_runs_taking_over_one_stale_lock_exactly_one_wins",
           f"{LOCKS}::test_a_lock_from_another_host_is_not_guessed_at")),
    Fault("CUDA out of memory in training (injected on the CPU)", "pfseg_train",
          "exit 1, one line (no traceback): the planned peak, the device's memory, the intact checkpoint "
          "and the command that plans again with a smaller `--gpu-memory-gb`",
          "checkpoint_latest.pt of the last epoch intact", (f"{CORPUS}[out-of-memory-train]",)),
    Fault("disk space: a finished fold folder", "pfseg_train",
          "checkpoint_final.pt and checkpoint_best.pt hold no optimiser state (a third of latest's bytes)",
          "latest (with its optimiser state), final, best", (
              "tests/test_checkpoints.py::test_final_and_best_hold_what_prediction_needs",
              "tests/test_checkpoints.py::test_latest_keeps_one_generation_back")),
]
