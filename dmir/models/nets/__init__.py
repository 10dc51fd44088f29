"""Network architectures, each readable next to its reference code: guided-diffusion ADM
(:mod:`.adm`), the DDPM/SDEdit UNet (:mod:`.ddpm_unet`), latent diffusion's UNet
(:mod:`.ldm`) and first-stage autoencoders (:mod:`.autoencoder`), consistency models
(:mod:`.consistency`), the diffusers ``UNet2DModel`` bridge (:mod:`.diffusers_unet`) and the
bkse blur-kernel network of the nonlinear deblurring task (:mod:`.kernel_wizard`).

They define networks and build them from configs; checkpoints are read by
:mod:`dmir.checkpoints` and wrapped as priors by :mod:`dmir.models.loading`.
"""
