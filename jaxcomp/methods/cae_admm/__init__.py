"""CAE-ADMM (Zhao & Liao 2019): a compressive autoencoder (Theis et al. 2017) whose rate is controlled by ADMM
pruning of the quantized latent instead of an entropy estimator. `models` holds the network, `admm` the pruning
algorithm, `train` the train loop and codec."""
