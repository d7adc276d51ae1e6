"""The paper's weighted multi-task loss (formula 3), other balances of its two tasks, and the evaluation metrics.

Formula (3) adds each head's gender BCE (about 0.2-0.7) to its age MAE in years (about 5-15):
the age terms dominate the shared layers' gradients (experiments.gender_ceiling --gradients).
TaskLoss keeps formula (3)'s head weights and offers what the field uses to rebalance:

    paper        sum_h w_h (g BCE_h + MAE_h)                      formula (3) when g = 1
    decades      sum_h w_h (g BCE_h + MAE_h / 10)                 age in decades inside the loss
    uncertainty  exp(-s_a) A / 2 + s_a / 2 + exp(-s_g) g G + s_g / 2, A = sum_h w_h MAE_h, G = sum_h w_h BCE_h
                 (Kendall, Gal, Cipolla, CVPR 2018, eq. 7 and 10: s = log sigma^2 of each task, learned)

with g = --gender-weight. The learned s_a, s_g are saved in the checkpoint (under "loss"),
never in the ONNX file: the network is unchanged.
"""
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


LOSSES = {
    "paper": "formula (3): sum over heads of w_h (BCE + MAE in years)",
    "decades": "as formula (3) with the age MAE in decades (MAE / 10)",
    "uncertainty": "learned log-variances per task (Kendall et al. 2018) weigh the age MAE and the gender BCE",
}


class TaskLoss(torch.nn.Module):
    """forward(out, age, male) -> (total, {head: its unweighted formula (3) term}); see the module's docstring."""

    def __init__(self, kind="paper", gender_weight=1.0):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)}")
        self.kind, self.gender_weight = kind, float(gender_weight)
        if kind == "uncertainty":
            self.log_variance = torch.nn.Parameter(torch.zeros(2))    # [age, gender], s = log sigma^2, from 1

    def forward(self, out, age, male):
        if self.kind != "uncertainty":      # summed head by head, in formula (3)'s order (the same value to the bit)
            scale = 1.0 if self.kind == "paper" else 0.1
            return weighted_sum(out, age, male, lambda bce, mae: self.gender_weight * bce + scale * mae
                                if (self.gender_weight, scale) != (1.0, 1.0) else bce + mae)
        gender, age_years, parts = 0.0, 0.0, {}
        for head, weight in HEAD_WEIGHTS.items():
            bce, mae = head_terms(out, age, male, head)
            parts[head] = float((bce + mae).detach())
            gender, age_years = gender + weight * bce, age_years + weight * mae
        s_age, s_gender = self.log_variance[0], self.log_variance[1]
        total = (0.5 * torch.exp(-s_age) * age_years + 0.5 * s_age
                 + torch.exp(-s_gender) * self.gender_weight * gender + 0.5 * s_gender)
        return total, parts

    def describe(self):
        """What the card says about this loss, and how it differs from formula (3)."""
        text = LOSSES[self.kind]
        if self.gender_weight != 1.0:
            text += f", the gender terms weighted {self.gender_weight:g}"
        return text


def describe_loss(kind=None, gender_weight=None):
    """The card's line for a run's stored --loss and --gender-weight (None: runs before them used formula (3))."""
    kind = kind or "paper"
    if kind not in LOSSES:
        return kind                                   # an experiment's loss stores its own description
    return TaskLoss(kind, gender_weight or 1.0).describe()


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


def by_gender(age_pred, male_prob, age, male):
    """{"female": metrics, "male": metrics} over the images of each true gender (unlabelled ones left out)."""
    age_pred, male_prob, age, male = (np.asarray(a, np.float64) for a in (age_pred, male_prob, age, male))
    return {name: (metrics(age_pred[male == value], male_prob[male == value], age[male == value], male[male == value])
                   if (male == value).any() else None)
            for name, value in (("female", 0), ("male", 1))}


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
