"""Training-time transforms: masks decoded at working resolution, flips, RPN targets."""
