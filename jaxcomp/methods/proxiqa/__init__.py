"""ProxIQA (Chen et al., IEEE TIP 2021): perceptual optimisation of learned image compression through a proxy
network trained, alternately with the codec, to mimic an image quality metric. See docs/proxiqa.md."""
