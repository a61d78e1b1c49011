import numpy as np
import pytest

from as3l_plugin.errors import InputError, LabelsError, ParameterError, PriorError
from as3l_plugin.metrics import (check_prior, class_coverage, expected_calibration_error,
                                 prior_accuracy, selective_accuracy)

P = np.array([[0.9, 0.1, 0.0],
              [0.2, 0.8, 0.0],
              [1 / 3, 1 / 3, 1 / 3],   # tie -> class 0
              [0.0, 0.4, 0.6]])
Y = np.array([0, 0, 0, 2])


def test_prior_accuracy_hand_made():
    assert prior_accuracy(P, Y) == pytest.approx(3 / 4)
    assert prior_accuracy(P, Y, exclude=[1]) == pytest.approx(1.0)
    assert prior_accuracy(P, Y, exclude=np.array([0, 2])) == pytest.approx(0.5)


def test_class_coverage():
    assert class_coverage([3, 1, 3, 0], 5) == 3
    assert class_coverage(np.array([], dtype=np.int64), 5) == 0
    with pytest.raises(LabelsError, match=r"\[0, 5\)"):
        class_coverage([5], 5)
    with pytest.raises(ParameterError):
        class_coverage([0], 0)


def test_ece_hand_made():
    # conf 1.0 correct, conf 0.6 wrong: (1/2)*0 + (1/2)*0.6
    assert expected_calibration_error([[1.0, 0.0], [0.6, 0.4]], [0, 1], n_bins=10) \
        == pytest.approx(0.3)
    # two rows in the same bin (0.8, 0.9]: mean conf 0.85, accuracy 0.5 -> 0.35
    assert expected_calibration_error([[0.85, 0.15], [0.85, 0.15]], [0, 1], n_bins=10) \
        == pytest.approx(0.35)
    # perfectly calibrated one-hot prior
    assert expected_calibration_error(np.eye(3), [0, 1, 2]) == 0.0
    # rows 0,1 of P: conf 0.9 (correct), 0.8 (wrong) in separate bins with 15 bins
    assert expected_calibration_error(P[:2], Y[:2]) == pytest.approx((0.1 + 0.8) / 2)
    assert expected_calibration_error(P, Y, exclude=[2, 3], n_bins=15) \
        == pytest.approx((0.1 + 0.8) / 2)


def test_selective_accuracy_hand_made():
    # confidences 0.9 (right), 0.8 (wrong), 1/3 (right by the tie rule), 0.6 (right)
    assert selective_accuracy(P, Y, 0.25) == 1.0            # row 0
    assert selective_accuracy(P, Y, 0.5) == 0.5             # rows 0, 1
    assert selective_accuracy(P, Y, 0.6) == pytest.approx(2 / 3)  # ceil(2.4) = 3: rows 0, 1, 3
    assert selective_accuracy(P, Y, 1) == prior_accuracy(P, Y)
    assert selective_accuracy(P, Y, 0.5, exclude=[1]) == 1.0  # rows 0, 3
    # equal confidence everywhere: the stable order scores the first rows
    assert selective_accuracy(np.full((4, 2), 0.5), [0, 1, 1, 1], 0.25) == 1.0
    for bad in (0, 1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ParameterError, match="fraction"):
            selective_accuracy(P, Y, bad)


def test_shapes_and_values_validated():
    with pytest.raises(LabelsError, match="4 rows"):
        prior_accuracy(P, Y[:3])
    with pytest.raises(PriorError, match="sum to 1"):
        prior_accuracy(P * 2, Y)
    with pytest.raises(PriorError, match="2-D"):
        prior_accuracy(P[0], Y[:1])
    with pytest.raises(PriorError, match="negative"):
        check_prior([[1.5, -0.5]])
    with pytest.raises(LabelsError, match="integer"):
        prior_accuracy(P, Y.astype(float))
    with pytest.raises(LabelsError, match=r"\[0, 3\)"):
        prior_accuracy(P, np.array([0, 0, 0, 3]))
    with pytest.raises(InputError, match="every row"):
        prior_accuracy(P, Y, exclude=[0, 1, 2, 3])
    with pytest.raises(InputError, match="range"):
        prior_accuracy(P, Y, exclude=[4])
    with pytest.raises(ParameterError):
        expected_calibration_error(P, Y, n_bins=0)
    with pytest.raises(PriorError, match="num_classes=4"):
        check_prior(P, num_classes=4)
