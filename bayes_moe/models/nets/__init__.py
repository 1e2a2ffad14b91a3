"""Deterministic sequence trunks of the neural experts (pure ``torch.nn``, no Pyro).

Every trunk maps a channels-last window batch ``(N, L, c)`` to hidden states, and the
window experts (:mod:`bayes_moe.models.experts.window`) put a Bayesian head on the
state of the last step. A trunk class declares how it is causal (``causal``):

``"masked"``
    It returns ``(N, L, E)`` and the state at step ``t`` reads inputs ``<= t`` only
    (causal convolutions, recurrences, masked or prefix-sum attention, the selective
    SSM, causal FFT convolutions).
``"last"``
    It returns the last step's state only, ``(N, 1, E)``, which reads the whole window
    (low-rank projections along time, landmark attention, a filter over the window's
    Fourier transform). The window ends at the forecast origin, so this is causal in
    calendar time all the same.

A trunk whose weights depend on the window length (``window_dependent = True``) takes
``length=L``. Every trunk has ``out_features``, ``config()``, ``receptive_field`` and
``n_params(in_channels, **options)``, and can be evaluated under :func:`torch.func.vmap`
over stacked weight draws with :func:`torch.func.functional_call`.

==================  =============================================  ========
module              trunks                                         causal
==================  =============================================  ========
:mod:`.conv`        cnn, depthwise, mobilenet, efficientnet_lite,  masked
                    tcn
:mod:`.recurrent`   gru, minimalrnn, sru                           masked
:mod:`.attention`   attention, performer                           masked
                    linformer, nystromformer                       last
:mod:`.ssm`         mamba                                          masked
:mod:`.spectral`    hyena                                          masked
                    timesnet                                       last
==================  =============================================  ========
"""
