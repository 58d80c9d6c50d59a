"""The search: candidate filters, construction heuristics, local searches, LNS and the budget."""
