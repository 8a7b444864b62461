"""The pretraining corpus builder (SPEC §1): filters, PII scrubbing, dedup, knowledge upsampling, token mix.

Built on datatrove; hcx adds only what it lacks (Korean word statistics with Kiwi, PII rules
for Korean, hate/ad density, code filters, validated readers, the token-share mix, reports).
"""
