"""Analyses of representations from the papers: invariance, windows, channel groups, maximization, caricatures."""
