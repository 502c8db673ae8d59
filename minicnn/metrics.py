"""Classification metrics on NumPy arrays (CuPy inputs are copied to the host first).

Conventions follow scikit-learn: ``cm[i, j]`` counts samples of true class ``i`` predicted as
``j``; a precision or recall whose denominator is zero is reported as 0.
"""
import numpy as np

from minicnn.backend import to_numpy


def _labels(y, name, op):
    y = to_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"{op}: {name} must be 1-D integer labels, got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{op}: {name} must hold integer labels, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise ValueError(f"{op}: {name} has a negative label ({y.min()})")
    return y.astype(np.int64)


def _predictions(pred_or_logits, op):
    """Scores ``(N, C)`` with C >= 2 -> argmax labels; 1-D input is taken as labels already."""
    a = to_numpy(pred_or_logits)
    if a.ndim == 2:
        if a.shape[1] < 2:             # (N, 1): a column of labels, or scores of one class?
            raise ValueError(f"{op}: predictions of shape {a.shape} are ambiguous: pass labels "
                             f"as (N,) or scores as (N, C) with C >= 2")
        if a.dtype.kind == "f" and np.isnan(a).any():
            raise ValueError(f"{op}: the scores hold NaN (shape {a.shape})")
        return a.argmax(axis=1)
    return _labels(a, "predictions", op)


def _same_length(a, b, names, op):
    if len(a) != len(b):
        raise ValueError(f"{op}: {names[0]} has {len(a)} samples but {names[1]} has {len(b)}")
    if len(a) == 0:
        raise ValueError(f"{op}: no samples")


def accuracy(pred_or_logits, y):
    """Fraction of samples whose prediction equals ``y``.

    ``pred_or_logits``: labels ``(N,)`` or scores ``(N, C)`` (argmax taken; ties -> lowest index).
    """
    pred = _predictions(pred_or_logits, "accuracy")
    y = _labels(y, "y", "accuracy")
    _same_length(pred, y, ("predictions", "y"), "accuracy")
    return float(np.mean(pred == y))


def top_k_accuracy(logits, y, k=5):
    """Fraction of samples whose true class is among the ``k`` highest scores.

    A sample counts as correct when fewer than ``k`` classes score strictly higher than its
    true class (so ties are resolved in the sample's favour).
    """
    logits = to_numpy(logits)
    y = _labels(y, "y", "top_k_accuracy")
    if logits.ndim != 2:
        raise ValueError(f"top_k_accuracy: logits must be (N, C), got shape {logits.shape}")
    if logits.dtype.kind == "f" and np.isnan(logits).any():
        raise ValueError(f"top_k_accuracy: the logits hold NaN (shape {logits.shape})")
    _same_length(logits, y, ("logits", "y"), "top_k_accuracy")
    num_classes = logits.shape[1]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"top_k_accuracy: k must be an int, got {k!r}")
    if not 1 <= k <= num_classes:
        raise ValueError(f"top_k_accuracy: k must be in [1, {num_classes}], got {k}")
    if y.max() >= num_classes:
        raise ValueError(f"top_k_accuracy: label {y.max()} out of range for {num_classes} classes")
    true_score = logits[np.arange(len(y)), y][:, None]
    higher = (logits > true_score).sum(axis=1)
    return float(np.mean(higher < k))


def confusion_matrix(y_true, y_pred, num_classes=None):
    """``cm[i, j]`` = number of samples with true class ``i`` and predicted class ``j``; int64.

    ``y_pred`` may be labels or scores ``(N, C)``.  ``num_classes`` defaults to 1 + the largest label.
    """
    y_true = _labels(y_true, "y_true", "confusion_matrix")
    y_pred = _predictions(y_pred, "confusion_matrix")
    _same_length(y_true, y_pred, ("y_true", "y_pred"), "confusion_matrix")
    largest = int(max(y_true.max(), y_pred.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"confusion_matrix: label {largest} out of range for num_classes={num_classes}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _safe_divide(num, den):
    return np.divide(num, den, out=np.zeros(np.shape(num), dtype=np.float64), where=den != 0)


def precision_recall_f1(cm):
    """Per-class and averaged scores from a confusion matrix.

    precision[c] = cm[c, c] / sum_i cm[i, c]     recall[c] = cm[c, c] / sum_j cm[c, j]
    f1[c] = 2 * precision * recall / (precision + recall)
    Returns a dict of float64 arrays ``precision``, ``recall``, ``f1`` and int ``support``
    (true count per class), plus floats ``macro_*`` (unweighted mean over classes) and
    ``weighted_*`` (mean weighted by support), and ``accuracy``.
    """
    cm = to_numpy(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"precision_recall_f1: cm must be square (C, C), got shape {cm.shape}")
    if cm.size and (cm.dtype.kind not in "iuf" or not np.all(np.isfinite(cm)) or cm.min() < 0):
        raise ValueError(f"precision_recall_f1: cm must hold counts >= 0, got dtype {cm.dtype}"
                         f"{f' and minimum {cm.min()}' if cm.dtype.kind in 'iuf' else ''}")
    cm = cm.astype(np.float64)
    true_pos = np.diag(cm)
    support = cm.sum(axis=1)
    precision = _safe_divide(true_pos, cm.sum(axis=0))
    recall = _safe_divide(true_pos, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = support.sum()
    result = {"precision": precision, "recall": recall, "f1": f1,
              "support": support.astype(np.int64),
              "accuracy": float(true_pos.sum() / total) if total else 0.0}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        result["macro_" + name] = float(values.mean())
        result["weighted_" + name] = float((values * support).sum() / total) if total else 0.0
    return result


def classification_report(y_true, y_pred, class_names=None, num_classes=None, digits=2):
    """A printable table of per-class precision, recall, F1 and support, laid out like scikit-learn's."""
    y_true = _labels(y_true, "y_true", "classification_report")
    y_pred = _predictions(y_pred, "classification_report")
    if num_classes is None and class_names is not None and len(y_true) and len(y_pred):
        # classes named but absent from the data still get a row
        num_classes = max(len(class_names), int(y_true.max()) + 1, int(y_pred.max()) + 1)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    scores = precision_recall_f1(cm)
    names = [str(c) for c in (class_names if class_names is not None else range(len(cm)))]
    if len(names) != len(cm):
        raise ValueError(f"classification_report: {len(names)} class_names for {len(cm)} classes")
    width = max([len(n) for n in names] + [len("weighted avg"), digits])
    headers = ["precision", "recall", "f1-score", "support"]
    lines = [" " * (width + 1) + "".join(f" {h:>9}" for h in headers), ""]
    for c, name in enumerate(names):
        lines.append(f"{name:>{width}} " + "".join(
            f" {scores[k][c]:>9.{digits}f}" for k in ("precision", "recall", "f1"))
            + f" {scores['support'][c]:>9}")
    lines.append("")
    total = int(scores["support"].sum())
    lines.append(f"{'accuracy':>{width}} " + " " * 20 + f" {scores['accuracy']:>9.{digits}f} {total:>9}")
    for avg, label in (("macro", "macro avg"), ("weighted", "weighted avg")):
        lines.append(f"{label:>{width}} " + "".join(
            f" {scores[f'{avg}_{k}']:>9.{digits}f}" for k in ("precision", "recall", "f1"))
            + f" {total:>9}")
    return "\n".join(lines) + "\n"
