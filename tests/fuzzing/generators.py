"""The generators, by name -> module. A generator module has ``setup(folder) -> context`` (run once per worker)
and ``make_case(rng, context, folder) -> Case`` (one seeded case; ``folder`` is an empty scratch folder)."""

GENERATORS = {
    "segmenter_options": "fuzzing.gen_segmenter",
    "processor_configs": "fuzzing.gen_processor",
    "config_values": "fuzzing.gen_config",
    "tiff_variants": "fuzzing.gen_tiff",
    "nonregular_files": "fuzzing.gen_files",
    "output_collisions": "fuzzing.gen_collisions",
    "writer_faults": "fuzzing.gen_writers",
    "writer_faults_tf": "fuzzing.gen_writers_tf",  # Keras writers (imports TensorFlow)
}

SELFTEST = {"selftest": "fuzzing.gen_selftest"}  # each outcome on purpose: the harness's own test
