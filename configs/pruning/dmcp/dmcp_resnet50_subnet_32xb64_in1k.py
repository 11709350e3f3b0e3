# Retrain the ResNet-50 subnet found by DMCP, from scratch: the ResNet-18
# subnet recipe (paper Section 4.1, "Pruned network training": batch 2048 =
# 32 GPUs x 64, 100 epochs, lr warmed up linearly from 0.2 to 0.8 in the
# first epoch, then cosine to 0; SGD, Nesterov momentum 0.9, weight decay
# 1e-4) with ResNet-50 as the architecture. Point it at the search's result:
#   --cfg-options model.subnet=<search work_dir>/DMCP_SUBNET_IMAGENET.yaml
_base_ = './dmcp_resnet18_subnet_32xb64_in1k.py'

model = dict(
    architecture=dict(backbone=dict(depth=50), head=dict(in_channels=2048))
)
