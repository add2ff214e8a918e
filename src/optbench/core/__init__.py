"""What every layer shares: config lookup and composition, errors, atomic files, figures, log settings."""
