"""core/route"""
