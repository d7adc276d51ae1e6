"""The network as a PyTorch module, built from refimpl.spec so names match the ONNX file.

state_dict keys are the ONNX initializer names (`age_branch.conv2.weight`, ...),
plus BatchNorm's `num_batches_tracked`, which export drops.
"""
import torch
from torch import nn

from refimpl import spec


class Block(nn.Module):
    """A chain of CBL (conv, bn, act) and max pool layers, named conv{i}/bn{i}/act{i}/pool{j}."""

    def __init__(self, block):
        super().__init__()
        self.order = []
        for layer in block.layers:
            if isinstance(layer, spec.Pool):
                self.add_module(layer.name, nn.MaxPool2d(2, 2))
                self.order.append(layer.name)
                continue
            conv, bn, act = layer.names
            self.add_module(conv, nn.Conv2d(layer.cin, layer.cout, layer.k, padding=layer.pad,
                                            dilation=layer.dilation, bias=False))
            self.add_module(bn, nn.BatchNorm2d(layer.cout, eps=spec.BN_EPSILON))
            self.add_module(act, nn.LeakyReLU(spec.LEAKY_ALPHA))
            self.order += [conv, bn, act]

    def forward(self, x):
        for name in self.order:
            x = getattr(self, name)(x)
        return x


# the heads in spec.FCS's order (gender_virtual, age_virtual, top_head, low_head): their FCs are made, and so
# drawn from torch's generator, in the order of the file's weights
HEADS = tuple(dict.fromkeys(fc.head for fc in spec.FCS))


class Head(nn.Module):
    """The fully connected layers of one head, named and sized as in spec.FCS."""

    def __init__(self, head):
        super().__init__()
        for fc in spec.FCS:
            if fc.head == head:
                self.add_module(fc.name, nn.Linear(fc.nin, fc.nout))


class AgeGenderNet(nn.Module):
    """forward(image [N, 3, 64, 64]) -> {output name: [N, 1]}, the eight outputs of the ONNX contract.

    Gender outputs are probabilities; `logits=True` also returns the three gender logits
    (`*_logit`), which the loss uses for numerically stable BCE."""

    def __init__(self, age_bias=33.0):
        super().__init__()
        for block in spec.BLOCKS:
            self.add_module(block.name, Block(block))
        for head in HEADS:
            self.add_module(head, Head(head))
        self.dropout = nn.Dropout(spec.DROPOUT)
        self.act = nn.LeakyReLU(spec.LEAKY_ALPHA)
        with torch.no_grad():   # start the age heads at a typical age: the L1 loss then converges faster
            self.get_submodule("age_virtual.fc").bias.fill_(age_bias)
            self.get_submodule("top_head.fc_age").bias.fill_(age_bias)
            self.get_submodule("low_head.fc").bias[1] = age_bias       # [:, 1] is the low head's age

    def fc(self, key, x):
        """The fully connected layer spec.FC_BY_NAME[key] (e.g. "top_head.fc1") on x [N, nin] -> [N, nout]."""
        fc = spec.FC_BY_NAME[key]
        return getattr(getattr(self, fc.head), fc.name)(x)

    def forward(self, image, logits=False):
        t = {"image": image}
        for block in spec.BLOCKS:
            if block.sources == ("stem",) and "stem" not in t:
                t["stem"] = torch.cat([t[b] for b in spec.STEM_BLOCKS], dim=1)
            x = torch.cat([t[s] for s in block.sources], dim=1)
            t[block.name] = getattr(self, block.name)(x)

        def gap(name):
            return t[name].mean(dim=(2, 3))

        # the heads as refimpl/model.py wires them, each FC by its spec.FC_BY_NAME key (= its weights' name)
        out = {}
        g_virtual = self.fc("gender_virtual.fc", gap("gender_branch"))
        out["age_virtual"] = self.fc("age_virtual.fc", gap("age_branch"))
        hidden = self.act(self.fc("top_head.fc1", self.dropout(gap("top"))))
        g_final = self.fc("top_head.fc_gender", hidden)
        out["age_final"] = self.fc("top_head.fc_age", hidden)
        low = self.fc("low_head.fc", gap("low_branch"))
        g_low, out["age_low"] = low[:, 0:1], low[:, 1:2]        # [:, 0] the gender logit, [:, 1] the age
        out["gender_final"], out["gender_virtual"], out["gender_low"] = (
            torch.sigmoid(g_final), torch.sigmoid(g_virtual), torch.sigmoid(g_low))
        out["age"] = (out["age_final"] + out["age_virtual"] + out["age_low"]) / 3
        out["gender"] = (out["gender_final"] + out["gender_virtual"] + out["gender_low"]) / 3
        result = {name: out[name] for name in spec.OUTPUT_NAMES}
        if logits:
            result.update(gender_final_logit=g_final, gender_virtual_logit=g_virtual, gender_low_logit=g_low)
        return result


def onnx_weights(model):
    """{ONNX initializer name: float32 numpy array} from the module's state_dict."""
    state = model.state_dict()
    return {name: state[name].detach().cpu().float().numpy().copy() for name in spec.parameter_shapes()}


def load_onnx_weights(model, weights):
    """Copy {initializer name: array} (as refimpl.onnx_format.read returns) into the module."""
    state = {name: torch.from_numpy(weights[name].copy()) for name in spec.parameter_shapes()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return model


