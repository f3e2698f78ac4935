"""Pictures and animations of the tutorials' concepts: convolution, padding, stride,
pooling, channels, receptive fields and the shapes of a network, layer by layer."""
