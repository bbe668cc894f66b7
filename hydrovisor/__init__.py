"""hydrovisor: control plane of a hydroponic greenhouse."""
