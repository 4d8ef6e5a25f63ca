"""The paper's Figure 1 (section 3.1), run the way the paper ran it: a small convolutional net
with ReLUs against the same net with tanh units, plain SGD with momentum and no regularisation,
each activation at the learning rate that reaches 25 % training error fastest, and the ratio of
the steps each needs.

A different, small net with its own loop, apart from the AlexNet one (train.py, model/): nets
that the AlexNet loop trains belong in model/, chosen by a config key. Here:
- net.py: the four-layer conv net and its init in each regime ('paper', 'modern');
- data.py: the images held in memory, each regime's input, the seeded batch order;
- train.py: the jitted SGD step and full pass, one run to the target (train_run);
- protocol.py: the lr chosen per activation on a tuning seed, the steps to the target on the
  other seeds, their ratio and its interval, every finished run kept as a JSON file (run_regime);
- config.py: the experiment's config (and its `quick` variant, for tests);
- __main__.py: the command, `python -m alexnet_jax.figure1 --workdir=runs/figure1`, which writes
  results.json, results.md and figure1.png.
"""
