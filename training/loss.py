"""The paper's weighted multi-task loss (formula 3) and the evaluation metrics."""
import numpy as np
import torch
import torch.nn.functional as F

# formula (3): the final head counts fully, the virtual outputs 0.3, the low-level branch 0.5
HEAD_WEIGHTS = {"final": 1.0, "virtual": 0.3, "low": 0.5}
HEADS = ("final", "virtual", "low")


def head_terms(out, age, male, head):
    """(BCE of the head's gender logit, MAE of its age in years), each averaged over the batch.

    male = -1 marks an image without a gender label (FG-NET, MegaAge-Asian): the BCE averages over the
    labelled images only, and is 0 for a batch without any."""
    logit, known = out[f"gender_{head}_logit"][:, 0], male >= 0
    bce = (F.binary_cross_entropy_with_logits(logit[known], male[known]) if bool(known.any())
           else logit.sum() * 0.0)
    return bce, F.l1_loss(out[f"age_{head}"][:, 0], age)


def weighted_sum(out, age, male, term):
    """sum over heads h of weight_h * term(BCE_h, MAE_h); returns (total, {head: its unweighted term})."""
    total, parts = 0.0, {}
    for head, weight in HEAD_WEIGHTS.items():
        value = term(*head_terms(out, age, male, head))
        parts[head] = float(value.detach())
        total = total + weight * value
    return total, parts


def paper_loss(out, age, male):
    """sum over heads h of weight_h * (BCE(gender_h, male) + MAE(age_h, age)).

    out: AgeGenderNet(..., logits=True) dict; age: float [N] years; male: float [N] in {0, 1}.
    Returns (total, {head: its unweighted loss}) ."""
    return weighted_sum(out, age, male, lambda bce, mae: bce + mae)


def gender_terms_only(out, age, male):
    """Formula (3) without its age terms. Only for the diagnostic in training.gender_ceiling: never the loss of
    a model that ships."""
    return weighted_sum(out, age, male, lambda bce, mae: bce)


def gender_correct(male_prob, male):
    """(correct [M] bool, mask [N] of the images with a gender label): male = -1 means unlabelled."""
    male = np.asarray(male)
    known = male >= 0
    return (np.asarray(male_prob)[known] >= 0.5) == (male[known] >= 0.5), known


def metrics(age_pred, male_prob, age, male):
    """MAE in years, CA(3) and CA(5) (share of ages within 3 and 5 years), gender accuracy over the images with a
    gender label (None where none has one, n_gender of them); numpy inputs [N]."""
    err = np.abs(np.asarray(age_pred, dtype=np.float64) - age)
    correct, _ = gender_correct(male_prob, male)
    return {"mae": float(err.mean()), "ca3": float((err <= 3).mean()), "ca5": float((err <= 5).mean()),
            "gender_acc": float(correct.mean()) if len(correct) else None, "n": int(len(err)),
            "n_gender": int(len(correct))}


def all_metrics(outputs, age, male):
    """{head or 'ensemble': metrics} from {output name: [N, 1] array} (as refimpl or the torch module give)."""
    names = {"ensemble": ("age", "gender"), **{h: (f"age_{h}", f"gender_{h}") for h in HEADS}}
    return {key: metrics(np.asarray(outputs[a])[:, 0], np.asarray(outputs[g])[:, 0], age, male)
            for key, (a, g) in names.items()}


AGE_GROUPS = ((0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 120))


def by_age_group(per_image, age):
    """{"0-9": [mean of per_image over the images of that true age (None if none), count], ...}."""
    per_image, age = np.asarray(per_image, np.float64), np.asarray(age)
    out = {}
    for lo, hi in AGE_GROUPS:
        sel = (age >= lo) & (age < hi)
        label = f"{lo}-{hi - 1}" if hi < 120 else f"{lo}+"
        out[label] = [float(per_image[sel].mean()) if sel.any() else None, int(sel.sum())]
    return out


def mae_by_age_group(age_pred, age):
    """{"0-9": [MAE, count], ...} by true age, for the error-by-age plot."""
    return by_age_group(np.abs(np.asarray(age_pred, np.float64) - age), age)


def gender_acc_by_age_group(male_prob, male, age):
    """{"0-9": [gender accuracy, count], ...} by true age over the labelled images (a child's gender is the
    hard case)."""
    correct, known = gender_correct(male_prob, male)
    return by_age_group(correct, np.asarray(age)[known])
