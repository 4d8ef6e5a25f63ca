"""The data: sources (image folders, TFDS, prepared copies), the paper's preprocessing and
augmentation, the training set's statistics, the dataset built once per run, and the Grain
loaders over it; prepare.py writes array_record copies."""
