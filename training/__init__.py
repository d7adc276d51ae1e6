"""PyTorch side of agegender-kit: the module, data sets, the paper's loss, training, export."""
