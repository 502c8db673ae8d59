"""minicnn.metrics against hand-computed values and, when importable, scikit-learn."""
import numpy as np
import pytest

from minicnn.metrics import (accuracy, classification_report, confusion_matrix, precision_recall_f1,
                             top_k_accuracy)

# A small case worked by hand:
#   true  0 1 2 2 2 1 0 0 1 2
#   pred  0 2 2 2 1 1 0 1 1 0
# cm rows = true class, columns = predicted class
Y_TRUE = np.array([0, 1, 2, 2, 2, 1, 0, 0, 1, 2])
Y_PRED = np.array([0, 2, 2, 2, 1, 1, 0, 1, 1, 0])
CM = np.array([[2, 1, 0],
               [0, 2, 1],
               [1, 1, 2]])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(confusion_matrix([0, 0], [0, 0], num_classes=3),
                                  [[2, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_accuracy_from_labels_and_from_logits():
    assert accuracy(Y_PRED, Y_TRUE) == pytest.approx(6 / 10)
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 1.0, 0.0]])
    # argmax: 1, 0, 2, 0 (a tie goes to the lower index)
    assert accuracy(logits, [1, 0, 1, 0]) == pytest.approx(3 / 4)
    assert accuracy([1, 2], [1, 2]) == 1.0


def test_top_k_accuracy_by_hand():
    logits = np.array([[0.5, 0.3, 0.2],    # y=1: second highest
                       [0.1, 0.2, 0.7],    # y=0: lowest
                       [0.9, 0.05, 0.05]])  # y=0: highest
    y = np.array([1, 0, 0])
    assert top_k_accuracy(logits, y, k=1) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, y, k=2) == pytest.approx(2 / 3)
    assert top_k_accuracy(logits, y, k=3) == 1.0
    assert top_k_accuracy(logits, y, k=1) == accuracy(logits, y)
    with pytest.raises(ValueError, match="k must be in"):
        top_k_accuracy(logits, y, k=4)


def test_precision_recall_f1_by_hand():
    scores = precision_recall_f1(CM)
    # precision = diagonal / column sums (3, 4, 3); recall = diagonal / row sums (3, 3, 4)
    np.testing.assert_allclose(scores["precision"], [2 / 3, 2 / 4, 2 / 3])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 2 / 3, 2 / 4])
    np.testing.assert_allclose(scores["f1"], [2 / 3, 4 / 7, 4 / 7])
    np.testing.assert_array_equal(scores["support"], [3, 3, 4])
    assert scores["macro_precision"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 8 / 7) / 3)
    assert scores["weighted_recall"] == pytest.approx(0.6)  # weighted recall is accuracy
    assert scores["accuracy"] == pytest.approx(0.6)


def test_class_never_predicted_scores_zero_not_nan():
    scores = precision_recall_f1(confusion_matrix([0, 1, 1], [0, 0, 0], num_classes=3))
    np.testing.assert_allclose(scores["precision"], [1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(scores["recall"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(scores["f1"], [0.5, 0.0, 0.0])
    assert not np.isnan(scores["macro_f1"])


def test_classification_report_layout():
    report = classification_report(Y_TRUE, Y_PRED, class_names=["cat", "dog", "bird"])
    lines = report.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert lines[2].split() == ["cat", "0.67", "0.67", "0.67", "3"]
    assert lines[4].split() == ["bird", "0.67", "0.50", "0.57", "4"]
    assert lines[6].split() == ["accuracy", "0.60", "10"]
    assert lines[7].split() == ["macro", "avg", "0.61", "0.61", "0.60", "10"]


def test_metrics_validate_their_inputs():
    with pytest.raises(ValueError, match="3 samples but y_pred has 2"):
        confusion_matrix([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="integer labels"):
        accuracy(np.array([0.5, 1.0]), [0, 1])
    with pytest.raises(ValueError, match="negative"):
        accuracy([0, 1], [0, -1])
    with pytest.raises(ValueError, match="square"):
        precision_recall_f1(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2 class_names for 3 classes"):
        classification_report(Y_TRUE, Y_PRED, class_names=["a", "b"])


def random_case(seed, n=200, classes=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes))
    y = rng.integers(0, classes, size=n)
    return logits, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    logits, y = random_case(seed)
    pred = logits.argmax(axis=1)
    labels = np.arange(5)
    np.testing.assert_array_equal(confusion_matrix(y, pred, 5), sk.confusion_matrix(y, pred, labels=labels))
    assert accuracy(logits, y) == pytest.approx(sk.accuracy_score(y, pred))
    for k in (1, 2, 3):
        assert top_k_accuracy(logits, y, k) == pytest.approx(sk.top_k_accuracy_score(y, logits, k=k, labels=labels))
    scores = precision_recall_f1(confusion_matrix(y, pred, 5))
    p, r, f, s = sk.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(scores["precision"], p)
    np.testing.assert_allclose(scores["recall"], r)
    np.testing.assert_allclose(scores["f1"], f)
    np.testing.assert_array_equal(scores["support"], s)
    for average in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(y, pred, labels=labels, average=average, zero_division=0)
        assert (scores[f"{average}_precision"], scores[f"{average}_recall"], scores[f"{average}_f1"]) == \
            pytest.approx((p, r, f))
    names = ["a", "bb", "ccc", "dddd", "eeeee"]
    assert classification_report(y, pred, class_names=names) == \
        sk.classification_report(y, pred, labels=labels, target_names=names, zero_division=0)
    assert classification_report(y, logits, digits=3) == sk.classification_report(y, pred, digits=3)


@pytest.mark.parametrize("call, error, words", [
    # an (N, 1) column used to be read as one-class scores: every prediction became 0
    (lambda: accuracy(np.array([[1], [0], [1]]), [1, 0, 1]), ValueError, "ambiguous"),
    (lambda: top_k_accuracy(np.full((2, 3), np.nan), [1, 2], k=1), ValueError, "NaN"),
    (lambda: top_k_accuracy(np.eye(3), [0, 1, 2], k=2.5), TypeError, "k must be an int"),
    (lambda: precision_recall_f1(np.array([[1, -1], [0, 1]])), ValueError, "counts >= 0"),
])
def test_metrics_refuse_inputs_they_would_misread(call, error, words):
    with pytest.raises(error, match=words):
        call()
