"""Red-team safety data collection (SPEC §7): annotators attack the model, score its answers
and write safe ones; the results become reward-model rankings and SFT conversations."""
