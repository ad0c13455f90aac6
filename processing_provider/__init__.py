"""Processing provider of Tailings Mapper."""
