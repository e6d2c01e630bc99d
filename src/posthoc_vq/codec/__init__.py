"""The codec: bitstreams of code indices, priors, standard codecs and rate-distortion comparisons (numpy only, no torch)."""
