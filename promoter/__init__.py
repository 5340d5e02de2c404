"""Promoter: evidence-based promotion or rollback of a challenger model from human feedback (DESIGN
section 6)."""
