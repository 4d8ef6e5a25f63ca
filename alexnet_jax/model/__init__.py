"""The network: AlexNet (alexnet.py), the paper's two-group convolution (grouped_conv.py), Local
Response Normalization (lrn.py) and max pooling with a fast backward (pooling.py)."""
