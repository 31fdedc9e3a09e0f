"""Read models as pure folds over the log, and the runner that keeps them current."""
